# Snell, Swersky & Zemel 2017, "Prototypical Networks for Few-shot Learning": the
# paper's Conv-4 embedding (blocks of 3x3 convolution, batch norm, ReLU and 2x2 max
# pooling) maps support and query images to one space; each class prototype is the mean
# of its support embeddings and queries are classified by softmax over negative squared
# distances. Here 5-way 1-shot episodes of 8x8 digits (train classes 0-4, test 5-9);
# the 8x8 input allows pooling after three blocks only (8 -> 4 -> 2 -> 1).
param width = 32
param shots = 1

block ConvBlock(out: int) {
    input x: [B, C, H, W]
    y = relu(BatchNorm(Conv2d(x, out=out, kernel=3, padding=1)))
    output y
}

block Conv4(width: int) {
    input x: [B, 64]
    h = reshape(x, [B, 1, 8, 8])                           # episodes give flat 64-d digits
    h = max_pool2d(ConvBlock(h, out=width), kernel=2)      # [B, width, 4, 4]
    h = max_pool2d(ConvBlock(h, out=width), kernel=2)      # [B, width, 2, 2]
    h = max_pool2d(ConvBlock(h, out=width), kernel=2)      # [B, width, 1, 1]
    h = ConvBlock(h, out=width)
    y = flatten(h, start=1)                                # [B, width]
    output y
}

model ProtoNetConv4(ways: int = 5) {
    input query: [Q, 64]
    input support: [S, 64]
    input support_y: [S] long
    enc = Conv4(width=width)                               # one encoder for both sets
    logits = ProtoNet(enc(query), enc(support), support_y, ways=ways)
    output logits: [Q, ways]
}

train {
    data      = episodes(ways=5, shots=shots, queries=5, episodes=50, eval_episodes=50)
    loss      = cross_entropy(logits, y)
    metrics   = [accuracy(logits, y)]
    optimizer = adam(lr=0.001)
    epochs    = 5
    seed      = 0
}
