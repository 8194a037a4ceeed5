# Misspelt blocks, hyperparameters and names.
# expect: E0201 8:9
# expect: E0402 9:19
# expect: E0201 10:14
# expect: E0212 11:5
model Classifier() {
    input x: [B, 64]
    h = Linaer(x, out=16)
    g = Linear(x, outt=16)
    y = relu(xx)
    output logits
}
