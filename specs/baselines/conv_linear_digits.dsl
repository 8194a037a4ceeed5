# Baseline for protopnet_digits.dsl: the same convolutional backbone and add-on layers
# with a plain linear head on the flattened feature map, trained for as many epochs
# (30) with Adam at the learning rate ProtoPNet's joint stage gives its add-on layers.
model ConvLinear(classes: int = 10) {
    input x: [B, 1, 8, 8]
    f = relu(BatchNorm(Conv2d(x, out=32, kernel=3, padding=1)))
    f = max_pool2d(relu(Conv2d(f, out=32, kernel=3, padding=1)), kernel=2)
    z = sigmoid(Conv2d(f, out=16, kernel=1))
    logits = Linear(flatten(z, start=1), out=classes)
    output logits: [B, classes]
}

train {
    data      = digits(images=true, batch=64)
    loss      = cross_entropy(logits, y)
    metrics   = [accuracy(logits, y)]
    optimizer = adam(lr=0.003)
    epochs    = 30
}
