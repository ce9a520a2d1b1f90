"""An OpenAI-compatible HTTP server (`keras-lm serve`)."""
