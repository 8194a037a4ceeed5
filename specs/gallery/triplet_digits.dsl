# Schroff et al. 2015, "FaceNet: A Unified Embedding for Face Recognition and Clustering":
# one encoder (a single named instance, so one set of weights) maps anchor, positive and
# negative to L2-normalised embeddings, trained with the triplet loss
# max(||a - p|| - ||a - n|| + margin, 0). No built-in source yields triples, so they are
# formed inside the batch of 8x8 digits: the positive is the anchor shifted one pixel to
# the left (the same digit, seen differently), the negative is the next image of the
# batch (the batch rolled by one; one time in ten it is the same class, which the margin
# tolerates). With a source of (anchor, positive, negative) images, feed them to `enc`.
param width = 16

block ConvEncoder(width: int) {
    input x: [B, 1, 8, 8]
    h = max_pool2d(relu(BatchNorm(Conv2d(x, out=16, kernel=3, padding=1))), kernel=2)   # [B, 16, 4, 4]
    h = max_pool2d(relu(BatchNorm(Conv2d(h, out=32, kernel=3, padding=1))), kernel=2)   # [B, 32, 2, 2]
    z = Linear(flatten(h, start=1), out=width)
    y = z / norm(z, dim=-1, keepdim=true)                                               # on the unit sphere
    output y
}

model TripletNet() {
    input x: [B, 1, 8, 8]
    enc = ConvEncoder(width=width)
    shifted = cat(x[:, :, :, 1:], zeros([B, 1, 8, 1]), dim=3)       # one pixel to the left
    rolled = cat(x[1:], x[:1], dim=0)                                # image b+1 for anchor b
    anchor = enc(x)
    positive = enc(shifted)
    negative = enc(rolled)
    output anchor: [B, width]
    output positive: [B, width]
    output negative: [B, width]
}

train {
    data      = digits(images=true, batch=64)
    loss      = triplet_margin(anchor, positive, negative, margin=0.5)
    optimizer = adam(lr=0.003)
    epochs    = 5
    seed      = 0
}
