//! Compiles the .proto files in `proto/` with protox (a protobuf compiler
//! in Rust, so building needs no `protoc`) and generates the tonic
//! services and prost messages.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "proto/etcd/api/mvccpb/kv.proto",
        "proto/etcd/api/etcdserverpb/rpc.proto",
        "proto/chorus/admin/v1/admin.proto",
        "proto/chorus/sessions/v1/sessions.proto",
    ];
    for file in files {
        println!("cargo:rerun-if-changed={file}");
    }
    let descriptors = protox::compile(files, ["proto"])?;
    tonic_prost_build::configure()
        .bytes(".")
        .compile_fds(descriptors)?;
    Ok(())
}
