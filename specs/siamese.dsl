# Weight sharing: one encoder instance applied to two inputs, compared by a dot product.
model Siamese(width: int = 32) {
    input a: [B, F]
    input b: [B, F]
    enc = MLP(hidden=64, out=width)
    za = enc(a)
    zb = enc(b)
    score = sum(za * zb, dim=-1)
    output score: [B]
    output za
}
