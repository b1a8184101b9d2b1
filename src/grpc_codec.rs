//! The protobuf codec of every fleetmon service: prost's, except that bytes which
//! are not the expected message are the sender's fault (INVALID_ARGUMENT), where
//! tonic's own codec says INTERNAL. The generated services use it (`build.rs`).
//!
//! Its buffers start at [`BUFFER_BYTES`], not tonic's 8 KiB: every open stream holds
//! one to decode and one to encode from the start, and an agent's stream carries a
//! batch of a few hundred bytes a second. A larger message grows them as it comes.

use std::marker::PhantomData;

use prost::Message;
use tonic::Status;
use tonic::codec::{BufferSettings, Codec, DecodeBuf, Decoder};
use tonic_prost::ProstEncoder;

/// The size a stream's encode and decode buffers start at.
pub const BUFFER_BYTES: usize = 1024;

/// Where tonic yields to send what it encoded: its default, 32 KiB.
const YIELD_THRESHOLD: usize = 32 * 1024;

fn buffer_settings() -> BufferSettings {
    BufferSettings::new(BUFFER_BYTES, YIELD_THRESHOLD)
}

/// [`tonic_prost::ProstCodec`] with undecodable input as INVALID_ARGUMENT.
#[derive(Debug)]
pub struct FleetmonCodec<T, U>(PhantomData<(T, U)>);

impl<T, U> Default for FleetmonCodec<T, U> {
    fn default() -> Self {
        FleetmonCodec(PhantomData)
    }
}

impl<T, U> Codec for FleetmonCodec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = MessageDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstEncoder::new(buffer_settings())
    }

    fn decoder(&mut self) -> Self::Decoder {
        MessageDecoder(PhantomData)
    }
}

/// Decodes `U`; bytes that are not a `U` are INVALID_ARGUMENT with prost's reason
/// ("failed to decode Protobuf message: …").
#[derive(Debug)]
pub struct MessageDecoder<U>(PhantomData<U>);

impl<U: Message + Default> Decoder for MessageDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        U::decode(buf)
            .map(Some)
            .map_err(|error| Status::invalid_argument(error.to_string()))
    }

    fn buffer_settings(&self) -> BufferSettings {
        buffer_settings()
    }
}
