//! The protobuf codec of every fleetmon service: prost's, except that bytes which
//! are not the expected message are the sender's fault (INVALID_ARGUMENT), where
//! tonic's own codec says INTERNAL. The generated services use it (`build.rs`).

use std::marker::PhantomData;

use prost::Message;
use tonic::Status;
use tonic::codec::{Codec, DecodeBuf, Decoder};
use tonic_prost::ProstEncoder;

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
        ProstEncoder::default()
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
}
