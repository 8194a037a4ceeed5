# Song et al. 2019, "AutoInt: Automatic Feature Interaction Learning via Self-Attentive
# Neural Networks": every numerical field m gets a learned embedding scaled by its value,
# e_m = x_m v_m; interacting layers let the fields attend to each other with multi-head
# self-attention (heads concatenated, no output projection) plus a residual projection,
# e' = ReLU(Attn(e) + W_res e); the logit reads all fields' final embeddings. Here on the
# 30 fields of the Wisconsin breast-cancer table. (MultiheadAttention scales the scores
# by 1/sqrt(d/heads); the paper's inner products are unscaled.)
param fields = 30
param d = 16
param heads = 2

block InteractingLayer(d: int, heads: int) {
    input e: [B, M, d]
    a = MultiheadAttention(e, heads=heads, bias=false, project_out=false)
    y = relu(a + Linear(e, out=d, bias=false))
    output y
}

model AutoInt(classes: int = 2, layers: int = 2) {
    input x: [B, fields]
    v = Parameter([fields, d], init="xavier_uniform")        # one embedding per field
    e = reshape(x, [B, fields, 1]) * v                        # [B, fields, d]: e_m = x_m v_m
    repeat layers { e = InteractingLayer(e, d=d, heads=heads) }
    logits = Linear(flatten(e, start=1), out=classes)        # [B, fields*d] -> classes
    output logits: [B, classes]
}

train {
    data      = breast_cancer(batch=64)
    loss      = cross_entropy(logits, y)
    metrics   = [accuracy(logits, y)]
    optimizer = adam(lr=0.003)
    epochs    = 10
    seed      = 0
}
