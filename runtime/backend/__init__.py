"""The backend container: a launcher (stdlib only) that checks the model and runs the engine.

``settings`` (the environment), ``model_file`` (find and check the GGUF), ``staging`` (copy it
off a network mount first), ``engines`` (the servers' command lines), ``supervisor`` (run the
child, log start-up steps, forward SIGTERM); ``python -m runtime.backend`` ties them together.
"""
