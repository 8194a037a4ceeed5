# Tolstikhin et al. 2021, "MLP-Mixer: An all-MLP Architecture for Vision": the image cut
# into patches by a per-patch linear embedding (a Conv2d with stride = kernel = patch);
# each Mixer layer mixes across patches with an MLP applied to every channel (on the
# transposed token table), then across channels with an MLP applied to every patch,
# each pre-LayerNorm and residual; global average pooling and a linear classifier.
# Here on 8x8 digit images with 2x2 patches (16 tokens).
param d = 32
param patch = 2
param tokens = (8 // patch) * (8 // patch)

block MixerLayer(tokens: int, d: int, token_hidden: int, channel_hidden: int) {
    input x: [B, tokens, d]
    t = permute(LayerNorm(x), [0, 2, 1])                                  # [B, d, tokens]
    t = MLP(t, hidden=token_hidden, out=tokens)                           # token mixing
    x = x + permute(t, [0, 2, 1])
    y = x + MLP(LayerNorm(x), hidden=channel_hidden, out=d)               # channel mixing
    output y
}

model MLPMixer(classes: int = 10, layers: int = 2) {
    input x: [B, 1, 8, 8]
    p = Conv2d(x, out=d, kernel=patch, stride=patch)                      # [B, d, 4, 4]
    h = transpose(flatten(p, start=2), 1, 2)                              # [B, tokens, d]
    repeat layers {
        h = MixerLayer(h, tokens=tokens, d=d, token_hidden=2 * tokens, channel_hidden=2 * d)
    }
    logits = Linear(mean(LayerNorm(h), dim=1), out=classes)
    output logits: [B, classes]
}

train {
    data      = digits(images=true, batch=64)
    loss      = cross_entropy(logits, y)
    metrics   = [accuracy(logits, y)]
    optimizer = adam(lr=0.003)
    epochs    = 5
    seed      = 0
}
