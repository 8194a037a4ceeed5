# Baseline for lstm_moe.dsl: the same two stacked LSTM layers without the MoE between them.
model LstmLM(vocab: int = 96, d: int = 64) {
    input tokens: [B, T] long
    h, state = LSTM(Embedding(tokens, num=vocab, dim=d), hidden=d)
    y = LSTM(h, hidden=d)
    logits = Linear(y, out=vocab)
    output logits: [B, T, vocab]
}

train {
    data      = chars(context=128, batch=32)
    loss      = cross_entropy(logits, next)
    metrics   = [perplexity(logits, next)]
    optimizer = adam(lr=0.003)
    epochs    = 3
}
