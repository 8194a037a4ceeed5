# Zaremba, Sutskever & Vinyals 2014, "Recurrent Neural Network Regularization": a
# two-layer LSTM language model (Hochreiter & Schmidhuber 1997) with dropout on the
# non-recurrent connections only: after the embedding, between the layers, and before
# the softmax layer. Here at the character level.
param d = 64
param context = 64

model LSTMCharLM(vocab: int = 96, layers: int = 2, p: float = 0.2) {
    input tokens: [B, T] long
    e = Dropout(Embedding(tokens, num=vocab, dim=d), p=p)
    h, state, cell = LSTM(e, hidden=d, layers=layers, dropout=p)
    logits = Linear(Dropout(h, p=p), out=vocab)
    output logits: [B, T, vocab]
}

train {
    data      = chars(context=context, batch=16, chars=50000)
    loss      = cross_entropy(logits, next)
    metrics   = [accuracy(logits, next)]
    optimizer = adam(lr=0.003)
    epochs    = 5
    seed      = 0
}
