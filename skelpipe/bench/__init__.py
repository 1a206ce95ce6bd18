"""Speed and memory benchmarks, below the ``skelpipe bench`` commands that parse their options.

- ``training``: samples/s of the training loop and of evaluation's forward pass (``bench train``);
- ``extraction``: frames/s of extraction end to end, of the network alone and of
  ``python -m openpifpaf.video`` (``bench extract``);
- ``memory``: peak memory of a process, and of training on a pack larger than memory (``bench memory``);
- ``suite``: every measurement in a child process beside its reference, into one report (``bench all``);
- ``report``: a report's figures and targets, and the README table made from them (``bench table``);
- ``inputs``: the synthetic data, teacher, pack and clip the benchmarks run on.

Each benchmark takes its settings as one dataclass and returns a result that gives its JSON line
(``as_json``) and its table (``table``).
"""
