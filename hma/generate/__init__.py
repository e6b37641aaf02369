"""Generation: a trained world model turned into synthetic robot data and a video simulator.

    world_model.py   WorldModel: checkpoint + tokenizer + statistics; rollouts in pixels and raw
                     action units
    synthesize.py    `hma-generate`: mixed real + synthetic datasets in the source's own format
    batch_runner.py  its workers: batched rollouts on Ray actors, one WorldModel each
    synthetic.py     one synthetic episode: build, sanity checks, staging for resume
    simulator.py     the learned simulator (reset/step like the ground-truth envs)
    success.py       success classifier for imagined episodes
    policy_eval.py   `hma evaluate-policy`: one policy scored in the real and learned simulators
    report.py        `hma report`; curves.py reads its TensorBoard training curves
    commands.py      argument parsers and handlers of `hma simulate|evaluate-policy|report`

Modules are imported by name (`from hma.generate.world_model import WorldModel`): importing this
package loads nothing heavy.
"""
