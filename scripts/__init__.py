"""Steps of the MultiNERD spaCy project. Each module with a ``main`` is a typer CLI run as
``python -m scripts.<name>`` from the project root (see project.yml)."""
