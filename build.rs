//! Build script: compiles `proto/*.proto` into Rust (prost messages, tonic clients and servers)
//! with `protox` (a pure-Rust protobuf compiler, so no system `protoc` is needed) feeding
//! `tonic-prost-build`. The generated files land in `OUT_DIR` and are included by
//! `src/cluster/proto.rs` and
//! `src/multinode/proto.rs`.

use std::path::Path;

const PROTOS: [&str; 4] = [
    "proto/prefillAndDecodeCommunication.proto",
    "proto/mindie_rs_kv.proto",
    "proto/model_execute_data.proto",
    "proto/mindie_rs_pipeline.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    for proto in PROTOS {
        println!("cargo:rerun-if-changed={proto}");
    }
    let includes = [Path::new("proto")];
    // `google/protobuf/empty.proto` is built into protox; prost maps `Empty` to `()`.
    let fds = protox::compile(PROTOS, includes)?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .build_transport(true)
        // KV bytes are sliced out of one buffer without copying.
        .bytes(".mindie_rs.kv.v1.KvChunkMsg.data")
        // Activations of a pipeline step (multi-node) travel as one buffer.
        .bytes(".mindie_rs.pipeline.v1.StageStep.hidden")
        .bytes(".mindie_rs.pipeline.v1.StageResult.hidden")
        .compile_fds(fds)?;
    Ok(())
}
