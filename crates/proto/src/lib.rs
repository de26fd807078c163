//! Generated code for the `muster.v1` package: messages, gRPC clients and servers, and the
//! descriptor set that server reflection serves.

#[allow(clippy::all, clippy::pedantic)]
pub mod v1 {
    tonic::include_proto!("muster.v1");
}

/// The encoded `FileDescriptorSet` of every muster.v1 proto file, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("muster_v1_descriptor");

pub mod convert;
pub mod convert_notify;
pub mod convert_unit;
