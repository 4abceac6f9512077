"""Serving side of the recommender: the training job (``train``), the model store / registry
(``registry``), the clean-data reader (``data``) and the recommend service logic (``recommend``).

Pure logic lives here; ``functions/train/main.py`` and ``functions/recommend/main.py`` only adapt the
trigger. See docs/serving.md.
"""
