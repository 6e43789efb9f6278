//! `nn::BinaryConvBlock`, `nn::BinaryLinearBlock` and `nn::Signs`: a block computes exactly
//! what its parts compute in a row (binary convolution or fully connected layer, pooling, batch
//! norm and sign), in training and outside it, chained on signs, packed or not; outside
//! training on the host backends its signs stay bits.

use burn::{
    module::{AutodiffModule, Param, RunningState},
    nn::PaddingConfig2d,
    tensor::Tensor,
};
use burn_qnn::{
    QnnAutodiffBackend, QnnBackend,
    inference::pack,
    nn::{
        BatchNormSign, BinaryConv2dConfig, BinaryConvBlock, BinaryConvBlockConfig,
        BinaryLinearBlock, BinaryLinearBlockConfig, BinaryLinearConfig, BitPlaneConv2dConfig,
        BitPlaneConvBlock, BitPlaneConvBlockConfig, Signs, max_pool2d,
    },
    ops::PaddingMode,
};

use crate::reference::{tensor, uniform, values};

/// A block `c_in → c_out` with a batch norm of both signs of γ (and one γ = 0), statistics in
/// the range of the products, and a bias.
fn block<B: QnnBackend>(
    channels: [usize; 2],
    stride: usize,
    pool: bool,
    mode: PaddingMode,
    seed: u64,
    device: &B::Device,
) -> BinaryConvBlock<B> {
    let [c_in, c_out] = channels;
    let mut block = BinaryConvBlockConfig::new(
        BinaryConv2dConfig::new(channels, [3, 3])
            .with_stride([stride, stride])
            .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
            .with_padding_mode(mode),
    )
    .with_pool(pool)
    .init::<B>(device);
    let bias = random_norm(&mut block.sign, c_out, (9 * c_in) as f32, seed, device);
    block.conv.bias = Some(bias);
    block
}

/// Sets a batch norm of `channels` channels with γ of both signs (and one γ = 0) and statistics
/// in the range of products up to `k`; returns a bias for the layer before it.
fn random_norm<B: QnnBackend>(
    sign: &mut BatchNormSign<B>,
    channels: usize,
    k: f32,
    seed: u64,
    device: &B::Device,
) -> Param<Tensor<B, 1>> {
    let vector = |v: Vec<f32>| Param::from_tensor(tensor::<B, 1>(v, [channels], device));
    let mut gamma = uniform(channels, -2.0, 2.0, seed);
    gamma[0] = 0.0;
    sign.norm.gamma = vector(gamma);
    sign.norm.beta = vector(uniform(channels, -0.5, 0.5, seed + 1));
    let stats = |v: Vec<f32>| RunningState::new(tensor::<B, 1>(v, [channels], device));
    sign.norm.running_mean = stats(uniform(channels, -0.3 * k, 0.3 * k, seed + 2));
    sign.norm.running_var = stats(uniform(channels, 0.5, k, seed + 3));
    vector(uniform(channels, -2.0, 2.0, seed + 4))
}

/// The block's parts, one after the other.
fn by_parts<B: QnnBackend>(block: &BinaryConvBlock<B>, x: Tensor<B, 4>) -> Tensor<B, 4> {
    let y = block.conv.forward(x);
    let y = if block.pool {
        max_pool2d(y, [2, 2], [2, 2])
    } else {
        y
    };
    block.sign.forward(y)
}

/// Outside training: two blocks chained on signs give exactly the parts' values (trained and
/// packed weights; channel counts across a word boundary; zero and `+1` padding; stride 2;
/// pooling of an odd size), the signs stay bits between them where the backend computes on the
/// host; in training the block's values and gradients are the parts'.
pub fn binary_conv_blocks<B: QnnAutodiffBackend>(device: &B::Device) {
    let (n, c_in, side) = (3, 5, 11);
    let x = uniform(n * c_in * side * side, -1.5, 1.5, 40);
    let on_host = B::InnerBackend::qnn_computes_on_host();
    for (case, (mode, stride)) in [(PaddingMode::Zero, 1), (PaddingMode::PlusOne, 2)]
        .into_iter()
        .enumerate()
    {
        let seed = 50 + 10 * case as u64;
        let first = block::<B>([c_in, 70], stride, false, mode, seed, device);
        let second = block::<B>([70, 9], 1, true, mode, seed + 5, device);
        let (first, second) = (first.valid(), second.valid());
        let input = || tensor::<B::InnerBackend, 4>(x.clone(), [n, c_in, side, side], device);
        let expected = values(by_parts(&second, by_parts(&first, input())));
        assert!(expected.contains(&1.0) && expected.contains(&-1.0));
        for packed in [false, true] {
            let (first, second) = if packed {
                (pack(&first).unwrap(), pack(&second).unwrap())
            } else {
                (first.clone(), second.clone())
            };
            let between = first.forward_signs(Signs::of(input()));
            assert_eq!(
                between.is_packed(),
                on_host,
                "case {case}: signs between blocks as bits exactly where the backend computes on \
                 the host"
            );
            let got = values(second.forward_signs(between).into_tensor());
            assert_eq!(got, expected, "case {case}, packed {packed}: two blocks");
            assert_eq!(
                values(first.forward(input())),
                values(by_parts(&first, input())),
                "case {case}, packed {packed}: one block"
            );
        }
    }

    // Training: the block's values and gradients are those of its parts.
    let block = block::<B>([c_in, 6], 1, true, PaddingMode::Zero, 90, device);
    let input = || tensor::<B, 4>(x.clone(), [n, c_in, side, side], device).require_grad();
    let (x1, x2) = (input(), input());
    let y1 = block.forward(x1.clone());
    let y2 = by_parts(&block, x2.clone());
    assert_eq!(values(y1.clone()), values(y2.clone()), "training");
    let weights = tensor::<B, 4>(
        uniform(y1.dims().iter().product(), -1.0, 1.0, 91),
        y1.dims(),
        device,
    );
    let g1 = (y1 * weights.clone()).sum().backward();
    let g2 = (y2 * weights).sum().backward();
    let grad = |x: &Tensor<B, 4>, g| values(x.grad(g).expect("an input gradient"));
    let input_grad = grad(&x1, &g1);
    assert!(
        input_grad.iter().any(|&g| g != 0.0),
        "a gradient reaches the input"
    );
    assert_eq!(input_grad, grad(&x2, &g2), "input gradient");
    let latent = |g| values(block.conv.weight.val().grad(g).expect("a weight gradient"));
    assert_eq!(latent(&g1), latent(&g2), "weight gradient");
}

/// A fully connected block `d_in → d_out` with a batch norm of both signs of γ (and one γ = 0),
/// statistics in the range of the products, and a bias.
fn linear_block<B: QnnBackend>(
    d_in: usize,
    d_out: usize,
    seed: u64,
    device: &B::Device,
) -> BinaryLinearBlock<B> {
    let mut block =
        BinaryLinearBlockConfig::new(BinaryLinearConfig::new(d_in, d_out)).init::<B>(device);
    let bias = random_norm(&mut block.sign, d_out, d_in as f32, seed, device);
    block.linear.bias = Some(bias);
    block
}

/// A convolution block, flattened, then two fully connected blocks (sizes across word
/// boundaries), chained on signs outside training: exactly the parts' values, packed or not,
/// with bits between the fully connected blocks where the backend computes on the host; in
/// training the values and gradients of the parts.
pub fn binary_linear_blocks<B: QnnAutodiffBackend>(device: &B::Device) {
    let (n, c_in, side) = (4, 3, 6);
    let x = uniform(n * c_in * side * side, -1.5, 1.5, 70);
    let on_host = B::InnerBackend::qnn_computes_on_host();
    let conv = block::<B>([c_in, 5], 1, true, PaddingMode::Zero, 71, device).valid();
    let first = linear_block::<B>(5 * 3 * 3, 130, 80, device).valid();
    let second = linear_block::<B>(130, 9, 90, device).valid();
    let input = || tensor::<B::InnerBackend, 4>(x.clone(), [n, c_in, side, side], device);
    let parts =
        |block: &BinaryLinearBlock<B::InnerBackend>, x| block.sign.forward(block.linear.forward(x));
    let flat = by_parts(&conv, input()).flatten::<2>(1, 3);
    let expected = values(parts(&second, parts(&first, flat)));
    assert!(expected.contains(&1.0) && expected.contains(&-1.0));
    for packed in [false, true] {
        let pack_all = |block: &BinaryLinearBlock<B::InnerBackend>| match packed {
            true => pack(block).unwrap(),
            false => block.clone(),
        };
        let (first, second) = (pack_all(&first), pack_all(&second));
        let flat = conv.forward_signs(Signs::of(input())).flatten();
        assert_eq!(flat.dims(), [n, 45]);
        let between = first.forward_signs(flat);
        assert_eq!(
            between.is_packed(),
            on_host,
            "signs between fully connected blocks as bits exactly where the backend computes \
             on the host"
        );
        let got = values(second.forward_signs(between).into_tensor());
        assert_eq!(
            got, expected,
            "packed {packed}: convolution and two fully connected blocks"
        );
    }

    // Training: the block's values and gradients are those of its parts.
    let block = linear_block::<B>(70, 6, 95, device);
    let input = || tensor::<B, 2>(uniform(n * 70, -1.5, 1.5, 96), [n, 70], device).require_grad();
    let (x1, x2) = (input(), input());
    let y1 = block.forward(x1.clone());
    let y2 = block.sign.forward(block.linear.forward(x2.clone()));
    assert_eq!(values(y1.clone()), values(y2.clone()), "training");
    let weights = tensor::<B, 2>(uniform(n * 6, -1.0, 1.0, 97), [n, 6], device);
    let g1 = (y1 * weights.clone()).sum().backward();
    let g2 = (y2 * weights).sum().backward();
    let input_grad = values(x1.grad(&g1).expect("an input gradient"));
    assert!(
        input_grad.iter().any(|&g| g != 0.0),
        "a gradient reaches the input"
    );
    assert_eq!(input_grad, values(x2.grad(&g2).unwrap()), "input gradient");
    let latent = |g| {
        values(
            block
                .linear
                .weight
                .val()
                .grad(g)
                .expect("a weight gradient"),
        )
    };
    assert_eq!(latent(&g1), latent(&g2), "weight gradient");
}

/// A bit-plane input block, then a convolution block on its signs, outside training: exactly
/// the parts' values, packed or not, with the stem's signs as bits where the backend computes on
/// the host, on one image of 5 × 5 and on three of 9 × 9.
pub fn bit_plane_blocks<B: QnnAutodiffBackend>(device: &B::Device) {
    // One small image (the host runs the stem on one thread) and three larger ones (split
    // between threads).
    for (n, side) in [(1, 5), (3, 9)] {
        let c_in = 3;
        let pixels: Vec<f32> = uniform(n * c_in * side * side, 0.0, 256.0, 100)
            .into_iter()
            .map(|p| p.floor() / 127.5 - 1.0)
            .collect();
        let on_host = B::InnerBackend::qnn_computes_on_host();
        let mut stem = BitPlaneConvBlockConfig::new(
            BitPlaneConv2dConfig::new([c_in, 70], [3, 3])
                .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1)),
        )
        .init::<B>(device);
        let bias = random_norm(&mut stem.sign, 70, 27.0 * 255.0 / 127.5, 101, device);
        stem.conv.bias = Some(bias);
        let stem = stem.valid();
        let next = block::<B>([70, 9], 1, true, PaddingMode::Zero, 110, device).valid();
        let images = || tensor::<B::InnerBackend, 4>(pixels.clone(), [n, c_in, side, side], device);
        let parts = |stem: &BitPlaneConvBlock<B::InnerBackend>| {
            stem.sign.forward(stem.conv.forward(images()))
        };
        let expected = values(by_parts(&next, parts(&stem)));
        assert!(expected.contains(&1.0) && expected.contains(&-1.0));
        for packed in [false, true] {
            let (stem, next) = match packed {
                true => (pack(&stem).unwrap(), pack(&next).unwrap()),
                false => (stem.clone(), next.clone()),
            };
            let signs = stem.forward_signs(images());
            assert_eq!(
                signs.is_packed(),
                on_host,
                "the stem's signs as bits exactly on the host"
            );
            assert_eq!(
                values(signs.clone().into_tensor()),
                values(parts(&stem)),
                "packed {packed}: the stem"
            );
            let got = values(next.forward_signs(signs).into_tensor());
            assert_eq!(
                got, expected,
                "packed {packed}: the stem and a convolution block"
            );
        }
    }
}
