//! `autograph-trainer`: learns the signature embedding network with burn, exports the model
//! bundle (ONNX f32 + int8 + manifest) and fetches data sets.

pub mod augment;
pub mod bundle;
pub mod data;
pub mod eval;
pub mod export;
pub mod fetch;
pub mod kfold;
pub mod loss;
pub mod model;
pub mod progress;
pub mod quantize;
pub mod quickstart;
pub mod report;
pub mod sampler;
pub mod train;
