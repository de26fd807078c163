//! Generated code for the `muster.v1` package: messages, gRPC clients and servers, and the
//! descriptor set that server reflection serves.

#[allow(clippy::all, clippy::pedantic)]
pub mod v1 {
    tonic::include_proto!("muster.v1");
}

/// The encoded `FileDescriptorSet` of every muster.v1 proto file, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("muster_v1_descriptor");

/// OpenTelemetry's OTLP trace messages and `TraceService` (a subset of opentelemetry-proto), for
/// lifecycle's OTLP exporter.
#[allow(clippy::all, clippy::pedantic)]
pub mod opentelemetry {
    pub mod proto {
        pub mod common {
            pub mod v1 {
                tonic::include_proto!("opentelemetry.proto.common.v1");
            }
        }
        pub mod resource {
            pub mod v1 {
                tonic::include_proto!("opentelemetry.proto.resource.v1");
            }
        }
        pub mod trace {
            pub mod v1 {
                tonic::include_proto!("opentelemetry.proto.trace.v1");
            }
        }
        pub mod collector {
            pub mod trace {
                pub mod v1 {
                    tonic::include_proto!("opentelemetry.proto.collector.trace.v1");
                }
            }
        }
    }
}

pub mod convert;
pub mod convert_notify;
pub mod convert_unit;
