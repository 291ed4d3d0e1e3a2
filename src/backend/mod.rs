//! Model execution behind one trait (DESIGN §5). The scheduler sees backends only through it.
