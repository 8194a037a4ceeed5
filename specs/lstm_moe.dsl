# specs/lstm_moe.dsl: Shazeer et al. 2017, an MoE between two stacked LSTM layers
model LstmMoE(vocab: int = 96, d: int = 64) {
    input tokens: [B, T] long
    h, state = LSTM(Embedding(tokens, num=vocab, dim=d), hidden=d)
    m, balance = MoE(h, experts=8, k=2)
    y = LSTM(m + h, hidden=d)                      # binds the first output only
    logits = Linear(y, out=vocab)
    output logits: [B, T, vocab]
}

train {
    data      = chars(context=128, batch=32)
    loss      = cross_entropy(logits, next)              # the MoE's balance loss is added by itself
    metrics   = [perplexity(logits, next)]
    optimizer = adam(lr=0.003)
    epochs    = 3
}
