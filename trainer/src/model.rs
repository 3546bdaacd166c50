//! The signature embedding network and the pair head used by the BCE loss.
//!
//! `EmbeddingNet` is what ships: `[B, 1, H, W] -> [B, d]`, L2-normalised inside `forward` so the
//! exported ONNX graph already produces unit vectors (the device's int8 templates assume it).
//! It only uses operations that burn-onnx 0.22 lowers and that a static int8 quantizer handles:
//! Conv, BatchNormalization, Relu, MaxPool, GlobalAveragePool, Reshape, MatMul/Add, and the
//! normalisation as Mul, ReduceSum, Add, Sqrt, Div. (burn-onnx has no lowering for `clamp_min` /
//! Max, so the normalisation is `x / sqrt(sum(x²) + eps)` rather than `x / sqrt(max(sum, eps))`;
//! for any real embedding the two agree to within f32 rounding.)
//!
//! `SiameseModel` adds the pair head `sigmoid(w·|f(a)-f(b)| + b)`; it exists only while training.

use burn::module::Param;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::pool::{AdaptiveAvgPool2d, AdaptiveAvgPool2dConfig, MaxPool2d, MaxPool2dConfig};
use burn::nn::{BatchNorm, BatchNormConfig, Linear, LinearConfig, PaddingConfig2d, Relu};
use burn::prelude::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Shape of the embedding network. Saved as JSON beside every checkpoint.
#[derive(Config, Debug, PartialEq)]
pub struct ModelConfig {
    /// Input height in pixels (must match the preprocessing config).
    #[config(default = 64)]
    pub height: usize,
    /// Input width in pixels (must match the preprocessing config).
    #[config(default = 128)]
    pub width: usize,
    /// Output channels of each [conv3x3-BN-ReLU-maxpool2x2] block; one block per entry.
    #[config(default = "vec![16, 32, 64, 128]")]
    pub channels: Vec<usize>,
    /// Conv3x3-BN-ReLU layers per block before its pool (VGG-style depth: 2 doubles the
    /// receptive field per block without a residual Add, which the int8 graph would not keep
    /// in integers).
    #[config(default = 1)]
    pub convs_per_block: usize,
    /// Embedding dimension d.
    #[config(default = 128)]
    pub embedding_dim: usize,
    /// Added under the square root of the L2 normalisation so an all-zero vector stays finite.
    #[config(default = 1e-12)]
    pub norm_eps: f64,
}

/// Why a model config cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum ModelConfigError {
    #[error("the network needs at least one block (channels is empty)")]
    NoBlocks,
    #[error("a block has zero channels")]
    ZeroChannels,
    #[error("embedding_dim must be positive")]
    ZeroEmbedding,
    #[error("convs_per_block must be 1 to 4, got {0}")]
    BadDepth(usize),
    #[error("input {height}x{width} is too small for {blocks} max-pool blocks (needs at least {need}x{need})")]
    InputTooSmall { height: usize, width: usize, blocks: usize, need: usize },
    #[error("norm_eps must be finite and positive, got {0}")]
    BadEps(f64),
}

impl ModelConfig {
    /// Checks the config describes a buildable network (every pool halves H and W).
    pub fn validate(&self) -> Result<(), ModelConfigError> {
        if self.channels.is_empty() {
            return Err(ModelConfigError::NoBlocks);
        }
        if self.channels.contains(&0) {
            return Err(ModelConfigError::ZeroChannels);
        }
        if self.embedding_dim == 0 {
            return Err(ModelConfigError::ZeroEmbedding);
        }
        if !(1..=4).contains(&self.convs_per_block) {
            return Err(ModelConfigError::BadDepth(self.convs_per_block));
        }
        let need = 1usize << self.channels.len().min(usize::BITS as usize - 1);
        if self.height < need || self.width < need {
            return Err(ModelConfigError::InputTooSmall {
                height: self.height,
                width: self.width,
                blocks: self.channels.len(),
                need,
            });
        }
        if !(self.norm_eps.is_finite() && self.norm_eps > 0.0) {
            return Err(ModelConfigError::BadEps(self.norm_eps));
        }
        Ok(())
    }

    /// Builds a freshly initialised embedding network (seed the device first for reproducibility).
    pub fn init(&self, device: &Device) -> Result<EmbeddingNet, ModelConfigError> {
        self.validate()?;
        let mut blocks = Vec::with_capacity(self.channels.len());
        let mut in_channels = 1;
        for &out_channels in &self.channels {
            blocks.push(ConvBlock::new(in_channels, out_channels, self.convs_per_block, device));
            in_channels = out_channels;
        }
        Ok(EmbeddingNet {
            blocks,
            pool: AdaptiveAvgPool2dConfig::new([1, 1]).init(),
            projection: LinearConfig::new(in_channels, self.embedding_dim).init(device),
            norm_eps: self.norm_eps,
        })
    }

    /// Builds the training model: the embedding network plus the BCE pair head.
    pub fn init_siamese(&self, device: &Device) -> Result<SiameseModel, ModelConfigError> {
        Ok(SiameseModel { embedding: self.init(device)?, pair_head: PairHead::new(self.embedding_dim, device) })
    }

    /// The training model with weights drawn from a ChaCha8 stream seeded by `seed`, with burn's
    /// default scheme (Kaiming-uniform, bound `1/sqrt(fan_in)`, for weights and biases).
    ///
    /// Unlike [`init_siamese`](Self::init_siamese), which draws from the device's global
    /// generator, the result does not depend on what other threads draw meanwhile.
    pub fn init_siamese_seeded(&self, device: &Device, seed: u64) -> Result<SiameseModel, ModelConfigError> {
        let mut model = self.init_siamese(device)?;
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut in_channels = 1;
        for (block, &out_channels) in model.embedding.blocks.iter_mut().zip(&self.channels) {
            let fan_in = in_channels * 9;
            block.conv.weight = uniform_param([out_channels, in_channels, 3, 3], fan_in, &mut rng, device);
            for layer in &mut block.extra {
                layer.conv.weight =
                    uniform_param([out_channels, out_channels, 3, 3], out_channels * 9, &mut rng, device);
            }
            in_channels = out_channels;
        }
        reinit_linear(&mut model.embedding.projection, in_channels, self.embedding_dim, &mut rng, device);
        reinit_linear(&mut model.pair_head.linear, self.embedding_dim, 1, &mut rng, device);
        Ok(model)
    }
}

/// A parameter of `shape` drawn uniformly from `±1/sqrt(fan_in)`.
fn uniform_param<const D: usize>(
    shape: [usize; D],
    fan_in: usize,
    rng: &mut ChaCha8Rng,
    device: &Device,
) -> Param<Tensor<D>> {
    let bound = 1.0 / (fan_in as f32).sqrt();
    let values: Vec<f32> = (0..shape.iter().product::<usize>()).map(|_| rng.random_range(-bound..=bound)).collect();
    Param::from_tensor(Tensor::from_data(TensorData::new(values, shape), device))
}

/// Redraws a row-layout `Linear` (`weight: [d_input, d_output]`).
fn reinit_linear(linear: &mut Linear, d_input: usize, d_output: usize, rng: &mut ChaCha8Rng, device: &Device) {
    linear.weight = uniform_param([d_input, d_output], d_input, rng, device);
    if linear.bias.is_some() {
        linear.bias = Some(uniform_param([d_output], d_input, rng, device));
    }
}

/// Conv3x3 (same padding, no bias: BatchNorm has one) -> BatchNorm -> ReLU -> MaxPool2x2, with
/// `convs_per_block - 1` more Conv3x3-BN-ReLU layers before the pool.
#[derive(Module, Debug)]
pub struct ConvBlock {
    conv: Conv2d,
    norm: BatchNorm,
    activation: Relu,
    /// Further conv layers of the block (empty for the one-conv block).
    extra: Vec<ConvLayer>,
    pool: MaxPool2d,
}

/// Conv3x3 -> BatchNorm (-> ReLU in the block's forward), same channels in and out.
#[derive(Module, Debug)]
pub struct ConvLayer {
    conv: Conv2d,
    norm: BatchNorm,
}

fn conv3x3(in_channels: usize, out_channels: usize, device: &Device) -> Conv2d {
    Conv2dConfig::new([in_channels, out_channels], [3, 3])
        .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
        .with_bias(false)
        .init(device)
}

impl ConvBlock {
    fn new(in_channels: usize, out_channels: usize, convs: usize, device: &Device) -> Self {
        Self {
            conv: conv3x3(in_channels, out_channels, device),
            norm: BatchNormConfig::new(out_channels).init(device),
            activation: Relu::new(),
            extra: (1..convs.max(1))
                .map(|_| ConvLayer {
                    conv: conv3x3(out_channels, out_channels, device),
                    norm: BatchNormConfig::new(out_channels).init(device),
                })
                .collect(),
            pool: MaxPool2dConfig::new([2, 2]).init(),
        }
    }

    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let mut x = self.activation.forward(self.norm.forward(self.conv.forward(x)));
        for layer in &self.extra {
            x = self.activation.forward(layer.norm.forward(layer.conv.forward(x)));
        }
        self.pool.forward(x)
    }
}

/// The embedding network `f: [B, 1, H, W] -> [B, d]`, unit L2 norm per row.
#[derive(Module, Debug)]
pub struct EmbeddingNet {
    blocks: Vec<ConvBlock>,
    pool: AdaptiveAvgPool2d,
    projection: Linear,
    norm_eps: f64,
}

impl EmbeddingNet {
    /// Embeds a batch of preprocessed images (ink high, `[B, 1, H, W]`).
    pub fn forward(&self, images: Tensor<4>) -> Tensor<2> {
        let mut x = images;
        for block in &self.blocks {
            x = block.forward(x);
        }
        let [batch, channels, _, _] = x.dims();
        let x = self.pool.forward(x).reshape([batch, channels]);
        l2_normalize(self.projection.forward(x), self.norm_eps)
    }

    /// The same network followed by `x -> x·m` before the normalisation (`m: [d, d]`), folded
    /// into the projection: `(x·W + b)·m = x·(W·m) + b·m`. The exported graph is unchanged in
    /// shape; see `whiten.rs` for why the transform exists.
    pub fn with_output_transform(mut self, m: Tensor<2>) -> Self {
        let weight = self.projection.weight.val().matmul(m.clone());
        self.projection.weight = Param::from_tensor(weight);
        if let Some(bias) = self.projection.bias.take() {
            let [d] = bias.val().dims();
            let folded = bias.val().reshape([1, d]).matmul(m).reshape([d]);
            self.projection.bias = Some(Param::from_tensor(folded));
        }
        self
    }
}

/// `x / sqrt(sum(x², dim 1) + eps)`, written with ONNX-exportable operations only.
pub fn l2_normalize(x: Tensor<2>, eps: f64) -> Tensor<2> {
    let norm = (x.clone() * x.clone()).sum_dim(1).add_scalar(eps).sqrt();
    x / norm
}

/// `logit = w·|a - b| + c`; the probability "same writer" is `sigmoid(logit)`.
///
/// Returns logits, not probabilities: the BCE loss works on logits for numerical stability.
#[derive(Module, Debug)]
pub struct PairHead {
    linear: Linear,
}

impl PairHead {
    fn new(embedding_dim: usize, device: &Device) -> Self {
        Self { linear: LinearConfig::new(embedding_dim, 1).init(device) }
    }

    /// Logits `[P]` for pairs of embeddings `a[i], b[i]` (`[P, d]` each).
    pub fn forward(&self, a: Tensor<2>, b: Tensor<2>) -> Tensor<1> {
        let [pairs, _] = a.dims();
        self.linear.forward((a - b).abs()).reshape([pairs])
    }
}

/// What is trained: the embedding network and the pair head. Only `embedding` is exported.
#[derive(Module, Debug)]
pub struct SiameseModel {
    pub embedding: EmbeddingNet,
    pub pair_head: PairHead,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny() -> ModelConfig {
        ModelConfig::new().with_height(16).with_width(32).with_channels(vec![4, 8]).with_embedding_dim(8)
    }

    #[test]
    fn default_config_is_valid_and_matches_the_contract() {
        let config = ModelConfig::new();
        assert_eq!((config.height, config.width, config.embedding_dim), (64, 128, 128));
        assert_eq!(config.channels, vec![16, 32, 64, 128]);
        config.validate().expect("default config is valid");
    }

    #[test]
    fn config_round_trips_through_json() {
        let config = tiny();
        let json = burn::config::config_to_json(&config);
        let back: ModelConfig = serde_json::from_str(&json).expect("parses");
        assert_eq!(back, config);
    }

    #[test]
    fn rejects_inputs_too_small_for_the_pools() {
        let config = ModelConfig::new().with_height(8);
        assert!(matches!(config.validate(), Err(ModelConfigError::InputTooSmall { .. })));
        assert!(matches!(ModelConfig::new().with_channels(vec![]).validate(), Err(ModelConfigError::NoBlocks)));
    }

    #[test]
    fn embeddings_have_unit_norm_and_the_right_shape() {
        let device = Device::flex();
        device.seed(1);
        let model = tiny().init(&device).expect("valid").valid();
        let images = Tensor::<4>::random([3, 1, 16, 32], burn::tensor::Distribution::Default, &device);
        let out = model.forward(images);
        assert_eq!(out.dims(), [3, 8]);
        let norms: Vec<f32> = (out.clone() * out).sum_dim(1).try_into_vec_as::<f32>().expect("f32");
        for n in norms {
            assert!((n - 1.0).abs() < 1e-5, "squared norm {n}");
        }
    }

    #[test]
    fn an_output_transform_folds_into_the_projection() {
        let device = Device::flex();
        device.seed(2);
        let model = tiny().init(&device).expect("valid").valid();
        let images = Tensor::<4>::random([3, 1, 16, 32], burn::tensor::Distribution::Default, &device);
        let m = Tensor::<2>::random([8, 8], burn::tensor::Distribution::Normal(0.0, 1.0), &device);
        let expected = l2_normalize(model.forward(images.clone()).matmul(m.clone()), 1e-12);
        let folded = model.clone().with_output_transform(m).forward(images);
        let (a, b): (Vec<f32>, Vec<f32>) =
            (expected.try_into_vec_as().expect("f32"), folded.try_into_vec_as().expect("f32"));
        assert!(a.iter().zip(&b).all(|(x, y)| (x - y).abs() < 1e-4), "{a:?} vs {b:?}");
        // The identity changes nothing.
        let same = model.clone().with_output_transform(Tensor::<2>::eye(8, &device));
        let unchanged = |m: &EmbeddingNet| m.projection.weight.val().try_into_vec_as::<f32>().expect("f32");
        assert_eq!(unchanged(&same), unchanged(&model));
    }

    #[test]
    fn seeded_init_is_reproducible_and_shaped_like_the_default() {
        let device = Device::flex();
        let a = tiny().init_siamese_seeded(&device, 5).expect("valid");
        let b = tiny().init_siamese_seeded(&device, 5).expect("valid");
        let c = tiny().init_siamese(&device).expect("valid");
        let weights = |m: &SiameseModel| -> Vec<f32> {
            let mut v = m.embedding.blocks[1].conv.weight.val().try_into_vec_as::<f32>().expect("f32");
            v.extend(m.pair_head.linear.weight.val().try_into_vec_as::<f32>().expect("f32"));
            v
        };
        assert_eq!(weights(&a), weights(&b));
        assert_eq!(a.embedding.blocks[1].conv.weight.val().dims(), c.embedding.blocks[1].conv.weight.val().dims());
        assert_eq!(a.embedding.projection.weight.val().dims(), c.embedding.projection.weight.val().dims());
        let bound = 1.0 / (4.0f32 * 9.0).sqrt();
        assert!(weights(&a)[..8 * 4 * 9].iter().all(|w| w.abs() <= bound));
    }

    #[test]
    fn l2_normalize_of_zero_is_zero_not_nan() {
        let device = Device::flex();
        let out = l2_normalize(Tensor::<2>::zeros([2, 4], &device), 1e-12);
        let values: Vec<f32> = out.try_into_vec_as::<f32>().expect("f32");
        assert!(values.iter().all(|v| *v == 0.0));
    }

    #[test]
    fn pair_head_computes_w_dot_abs_diff_plus_b() {
        let device = Device::flex();
        let mut head = PairHead::new(2, &device);
        head.linear.weight = Param::from_tensor(Tensor::from_floats([[2.0], [-1.0]], &device));
        head.linear.bias = Some(Param::from_tensor(Tensor::from_floats([0.5], &device)));
        let a = Tensor::<2>::from_floats([[1.0, 0.0], [0.0, 0.0]], &device);
        let b = Tensor::<2>::from_floats([[0.0, 3.0], [0.0, 0.0]], &device);
        let logits: Vec<f32> = head.forward(a, b).try_into_vec_as::<f32>().expect("f32");
        // 2·|1-0| - 1·|0-3| + 0.5 = -0.5 ; 0 + 0.5
        assert_eq!(logits, vec![-0.5, 0.5]);
    }

    /// The shipped graph must lower to ONNX with the exporter the export command uses.
    #[test]
    fn embedding_net_exports_to_onnx() {
        let device = Device::flex();
        let model = tiny().init(&device).expect("valid").valid();
        let sample = Tensor::<4>::zeros([1, 1, 16, 32], &device);
        let onnx =
            burn_onnx::export::OnnxExporter::new().export(&model, sample, EmbeddingNet::forward).expect("exports");
        assert!(!onnx.as_bytes().is_empty());
    }
}
