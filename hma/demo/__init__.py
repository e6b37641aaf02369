"""`make demo`: the longest end-to-end path the project supports, on local Ray and local files.

run.py     record simulated robots, convert through every format, train the image tokenizer,
           then the model stages, and write demo-out/report.html
stages.py  the model half: token store, pretraining, hma-generate, the model report
"""
