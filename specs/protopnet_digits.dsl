# specs/protopnet_digits.dsl: "this looks like that" on 8x8 digit images
model ProtoPNet(classes: int = 10, per_class: int = 3) {
    input x: [B, 1, 8, 8]
    f = relu(BatchNorm(Conv2d(x, out=32, kernel=3, padding=1)))
    f = max_pool2d(relu(Conv2d(f, out=32, kernel=3, padding=1)), kernel=2)   # [B, 32, 4, 4]
    z = sigmoid(Conv2d(f, out=16, kernel=1))                                  # add-on layers
    logits, dist = PrototypeHead(z, classes=classes, per_class=per_class)     # patch prototypes
    output logits: [B, classes]
}

train {
    data      = digits(images=true, batch=64)
    loss      = cross_entropy(logits, y) + 0.8 * cluster_cost(dist, y) - 0.08 * separation_cost(dist, y)
    metrics   = [accuracy(logits, y)]
    stages    = [warm(epochs=5), joint(epochs=20, push_every=10), last_layer(epochs=5)]
}
