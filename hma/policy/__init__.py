"""Visuomotor policies trained by behaviour cloning: the policies the learned simulator scores.

config.py      PolicyConfig and named presets
model.py       a conv image encoder (+ proprio where the data has it) and an action-chunk head
data.py        behaviour-cloning samples (frame, state, next chunk of raw actions) from episodes
train.py       `hma policy train`: Ray Train, one checkpoint every `checkpoint_every` steps
checkpoint.py  policy checkpoints (safetensors + JSON); DIR[@step] picks one of a run's
agent.py       a trained policy ready to act: raw frames in, raw action chunks out
evaluate.py    success rate in a ground-truth simulator, ± its binomial standard error
"""
