# Cho et al. 2014, "Learning Phrase Representations using RNN Encoder-Decoder for
# Statistical Machine Translation" (the gated recurrent unit), used as a character-level
# language model: embed each character, run a two-layer GRU, predict the next character
# at every step.
param d = 64
param context = 64

model GRUCharLM(vocab: int = 96, layers: int = 2) {
    input tokens: [B, T] long
    h, state = GRU(Embedding(tokens, num=vocab, dim=d), hidden=d, layers=layers)
    logits = Linear(h, out=vocab)
    output logits: [B, T, vocab]
}

train {
    data      = chars(context=context, batch=16, chars=50000)
    loss      = cross_entropy(logits, next)
    metrics   = [accuracy(logits, next)]          # perplexity: not a known metric (yet)
    optimizer = adam(lr=0.003)
    epochs    = 5
    seed      = 0
}
