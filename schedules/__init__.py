"""Celery beat: its schedule (`beat.py`) and the tasks only it runs (`tasks.py`)."""
