# A two-layer classifier on scikit-learn's 8x8 digits (DESIGN §3 in text form).
param hidden = 16

model Classifier(classes: int = 10) {
    input x: [B, 64]
    h = Linear(x, out=hidden)
    h = relu(h)
    logits = Linear(h, out=classes)
    output logits: [B, classes]
}

train {
    data      = digits(batch=32)
    loss      = cross_entropy(logits, y)
    metrics   = [accuracy(logits, y)]
    optimizer = adamw(lr=0.01, weight_decay=0.1)
    schedule  = cosine()
    epochs    = 40
}
