# A deliberately broken copy of classifier.dsl.
# expect: E0301 11:13
# expect: E0304 13:15
param hidden = 16

model Classifier(classes: int = 10) {
    input x: [B, 64]
    h = Linear(x, out=hidden)
    h = relu(h)
    logits = Linear(h, out=classes)
    mixed = logits + h
    output logits: [B, classes]
    output h: [B, 32]
}
