//! `autograph-trainer`: learns the signature embedding network with burn, exports the model
//! bundle (ONNX f32 + int8 + manifest) and fetches data sets.

pub mod bundle;
pub mod export;
pub mod fetch;
pub mod progress;
pub mod quantize;
pub mod augment;
pub mod data;
pub mod loss;
pub mod model;
pub mod sampler;
pub mod train;
