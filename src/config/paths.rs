//! Where the config file and the install home are (SPEC §4), and resolution of relative paths
//! against the home.
