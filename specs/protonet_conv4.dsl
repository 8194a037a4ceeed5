# Prototypical Networks (Snell et al. 2017) with the paper's conv4 encoder: four blocks of
# 3x3 convolution (64 filters), batch norm, ReLU and 2x2 max pooling, on 8x8 digit images
# (three poolings take 8x8 to 1x1, so the fourth block keeps its size). Support and query
# go through the encoder together, as in the reference code, so batch norm sees one batch.
param shots = 1  # support examples per class: `--set shots=5` for 5-shot

block ConvBlock(width: int) {
    input x: [N, C, H, W]
    y = relu(BatchNorm(Conv2d(x, out=width, kernel=3, padding=1)))
    output y
}

model ProtoNetConv4(ways: int = 5, width: int = 64) {
    input query: [Q, 1, 8, 8]
    input support: [S, 1, 8, 8]
    input support_y: [S] long
    h = cat(support, query, dim=0)
    h = max_pool2d(ConvBlock(h, width=width), 2)
    h = max_pool2d(ConvBlock(h, width=width), 2)
    h = max_pool2d(ConvBlock(h, width=width), 2)
    z = flatten(ConvBlock(h, width=width), start=1)      # [S + Q, width]
    logits = ProtoNet(z[S:], z[:S], support_y, ways=ways)
    output logits: [Q, ways]
}

train {
    data      = episodes(ways=5, shots=shots, queries=5, images=true)
    loss      = cross_entropy(logits, y)
    metrics   = [accuracy(logits, y)]
    optimizer = adam(lr=0.001)
    epochs    = 20
    seed      = 0
}
