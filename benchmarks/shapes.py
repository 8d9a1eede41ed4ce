"""Parameter shapes of real architectures, generated from their definitions (no weights, no
torchvision).

Every generator returns a list of ``(name, shape)`` pairs in PyTorch layout (axis 0 is the output
channel, as in ``nn.Conv2d.weight`` and ``nn.Linear.weight``), in the order the modules register
their parameters. The totals are checked against the published parameter counts of the reference
implementations:

========================  ============  ==============================================
set                       parameters    reference
========================  ============  ==============================================
``resnet50``              25,557,032    torchvision ``resnet50(weights=None)``
``resnet18``              11,689,512    torchvision ``resnet18(weights=None)``
``vit_b16``               86,567,656    torchvision ``vit_b_16(weights=None)``
``gpt2``                  124,439,808   GPT-2 small (tied embeddings, HF ``gpt2``)
``many_small``            2,932,736     synthetic: 2,048 tensors, none above 4,608 elements
``tiny``                  10,714        synthetic, for ``--quick`` smoke runs only
========================  ============  ==============================================

GPT-2's ``Conv1D`` weights are stored (in, out) by Hugging Face; here they are given as
``nn.Linear`` would hold them, (out, in), so axis 0 is the output feature like everywhere else.
"""

from __future__ import annotations

from collections.abc import Callable

Shape = tuple[int, ...]
ParamList = list[tuple[str, Shape]]

EXPECTED_TOTALS: dict[str, int] = {
    "resnet50": 25_557_032,
    "resnet18": 11_689_512,
    "vit_b16": 86_567_656,
    "gpt2": 124_439_808,
    "many_small": 2_932_736,
    "tiny": 10_714,
    "rows_n1": 4_194_304,
    "rows_n4": 4_194_304,
    "rows_n111": 1_048_576,
    "embedding": 38_400_000,
}


def _norm(prefix: str, width: int) -> ParamList:
    """A BatchNorm/LayerNorm affine pair (weight, bias) of ``width`` features."""
    return [(f"{prefix}.weight", (width,)), (f"{prefix}.bias", (width,))]


def _linear(prefix: str, out_features: int, in_features: int, bias: bool = True) -> ParamList:
    params: ParamList = [(f"{prefix}.weight", (out_features, in_features))]
    if bias:
        params.append((f"{prefix}.bias", (out_features,)))
    return params


def _conv(prefix: str, out_ch: int, in_ch: int, k: int) -> ParamList:
    """A bias-free k x k convolution, as every ResNet convolution is."""
    return [(f"{prefix}.weight", (out_ch, in_ch, k, k))]


def resnet(
    layers: tuple[int, int, int, int], bottleneck: bool, num_classes: int = 1000
) -> ParamList:
    """ResNet (He et al. 2016) as torchvision builds it (v1.5: stride on the 3x3 convolution,
    which does not change shapes).

    ``layers``: blocks per stage, e.g. (3, 4, 6, 3) for ResNet-50. ``bottleneck``: Bottleneck
    blocks (1x1, 3x3, 1x1, expansion 4) instead of BasicBlocks (3x3, 3x3, expansion 1).
    A stage's first block gets a 1x1 downsample convolution + norm whenever the stride is not 1
    or the channel count changes.
    """
    expansion = 4 if bottleneck else 1
    params: ParamList = _conv("conv1", 64, 3, 7) + _norm("bn1", 64)
    inplanes = 64
    for stage, (planes, blocks) in enumerate(zip((64, 128, 256, 512), layers), start=1):
        for block in range(blocks):
            pre = f"layer{stage}.{block}"
            stride = 2 if (stage > 1 and block == 0) else 1
            if bottleneck:
                params += _conv(f"{pre}.conv1", planes, inplanes, 1) + _norm(f"{pre}.bn1", planes)
                params += _conv(f"{pre}.conv2", planes, planes, 3) + _norm(f"{pre}.bn2", planes)
                params += _conv(f"{pre}.conv3", planes * 4, planes, 1)
                params += _norm(f"{pre}.bn3", planes * 4)
            else:
                params += _conv(f"{pre}.conv1", planes, inplanes, 3) + _norm(f"{pre}.bn1", planes)
                params += _conv(f"{pre}.conv2", planes, planes, 3) + _norm(f"{pre}.bn2", planes)
            if block == 0 and (stride != 1 or inplanes != planes * expansion):
                params += _conv(f"{pre}.downsample.0", planes * expansion, inplanes, 1)
                params += _norm(f"{pre}.downsample.1", planes * expansion)
            inplanes = planes * expansion
    return params + _linear("fc", num_classes, 512 * expansion)


def vit_b16(num_classes: int = 1000, image: int = 224) -> ParamList:
    """ViT-B/16 (Dosovitskiy et al. 2021) as torchvision's ``vit_b_16`` builds it: 16x16 patch
    convolution, class token, learned position embedding, 12 pre-norm encoder blocks (fused
    q/k/v ``in_proj_weight`` of ``nn.MultiheadAttention``, MLP 768-3072-768), final LayerNorm,
    linear head."""
    dim, depth, mlp, patch = 768, 12, 3072, 16
    tokens = (image // patch) ** 2 + 1
    params: ParamList = [("conv_proj.weight", (dim, 3, patch, patch)), ("conv_proj.bias", (dim,))]
    params += [("class_token", (1, 1, dim)), ("encoder.pos_embedding", (1, tokens, dim))]
    for i in range(depth):
        pre = f"encoder.layers.{i}"
        params += _norm(f"{pre}.ln_1", dim)
        params += [(f"{pre}.self_attention.in_proj_weight", (3 * dim, dim))]
        params += [(f"{pre}.self_attention.in_proj_bias", (3 * dim,))]
        params += _linear(f"{pre}.self_attention.out_proj", dim, dim)
        params += _norm(f"{pre}.ln_2", dim)
        params += _linear(f"{pre}.mlp.0", mlp, dim) + _linear(f"{pre}.mlp.3", dim, mlp)
    return params + _norm("encoder.ln", dim) + _linear("heads.head", num_classes, dim)


def gpt2(vocab: int = 50257, context: int = 1024, dim: int = 768, depth: int = 12) -> ParamList:
    """GPT-2 small (Radford et al. 2019): token and position embeddings, ``depth`` pre-norm
    blocks (fused q/k/v projection, MLP dim-4dim-dim), final LayerNorm; the LM head is tied to
    the token embedding, so it adds no parameters."""
    params: ParamList = [("wte.weight", (vocab, dim)), ("wpe.weight", (context, dim))]
    for i in range(depth):
        pre = f"h.{i}"
        params += _norm(f"{pre}.ln_1", dim)
        params += _linear(f"{pre}.attn.c_attn", 3 * dim, dim)
        params += _linear(f"{pre}.attn.c_proj", dim, dim)
        params += _norm(f"{pre}.ln_2", dim)
        params += _linear(f"{pre}.mlp.c_fc", 4 * dim, dim)
        params += _linear(f"{pre}.mlp.c_proj", dim, 4 * dim)
    return params + _norm("ln_f", dim)


def many_small(groups: int = 512) -> ParamList:
    """Per-tensor overhead stress: ``groups`` repeats of a small linear layer (32x32 + bias) and
    a small convolution (64x8x3x3 + bias): 4 tensors per group, 2,048 tensors by default."""
    params: ParamList = []
    for i in range(groups):
        params += _linear(f"g{i}.linear", 32, 32)
        params += [(f"g{i}.conv.weight", (64, 8, 3, 3)), (f"g{i}.conv.bias", (64,))]
    return params


SHORT_ROWS: dict[str, Shape] = {
    "rows_n1": (1 << 22, 1),
    "rows_n4": (1 << 20, 4),
    "rows_n111": (1 << 20, 1, 1, 1),
    "embedding": (50_000, 768),
}
"""One-tensor sets of many short rows (per-row statistics as large as the tensor) and an
embedding table: the shapes where a per-row test costs the most per element."""


def tiny() -> ParamList:
    """A very small CNN-shaped set for smoke runs (not a benchmark)."""
    return _conv("conv", 16, 3, 3) + _norm("bn", 16) + _linear("fc", 10, 16 * 8 * 8)


SETS: dict[str, Callable[[], ParamList]] = {
    "resnet50": lambda: resnet((3, 4, 6, 3), bottleneck=True),
    "resnet18": lambda: resnet((2, 2, 2, 2), bottleneck=False),
    "vit_b16": vit_b16,
    "gpt2": gpt2,
    "many_small": many_small,
    "tiny": tiny,
    **{name: (lambda shape=shape: [("weight", shape)]) for name, shape in SHORT_ROWS.items()},
}


def numel(shape: Shape) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def total(params: ParamList) -> int:
    """Total number of scalar parameters."""
    return sum(numel(s) for _, s in params)


def build(name: str) -> ParamList:
    """Shapes of the named set; raises ``ValueError`` if its total differs from the published
    count (a generator bug must not silently change what is benchmarked)."""
    params = SETS[name]()
    got, want = total(params), EXPECTED_TOTALS[name]
    if got != want:
        raise ValueError(f"{name}: generated {got:,} parameters, expected {want:,}")
    return params
