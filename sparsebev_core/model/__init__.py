"""The SparseBEV model: backbones, FPN, sparse query decoder, head, streaming detector."""
