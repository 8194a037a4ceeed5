# Gradual magnitude pruning (Zhu & Gupta 2017) of a wide LSTM language model on chars():
# the LSTM's weight matrices and the output layer are pruned to 75% sparsity during the
# first half of training. `--set d=48 --set sparsity=0` trains the small dense LSTM
# with about as many non-zero weights (docs/RESULTS.md has the comparison).
param d = 128
param sparsity = 0.75

model PrunedLSTM(vocab: int = 96) {
    input tokens: [B, T] long
    h, state = LSTM(Embedding(tokens, num=vocab, dim=64), hidden=d)
    logits = Linear(h, out=vocab)
    output logits: [B, T, vocab]
}

train {
    data      = chars(context=128, batch=32)
    loss      = cross_entropy(logits, next)
    metrics   = [perplexity(logits, next)]
    optimizer = adam(lr=0.003)
    prune     = magnitude(sparsity=sparsity, start=1, end=5, every=1)
    epochs    = 10
    seed      = 0
}
