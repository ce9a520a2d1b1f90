"""Chat templates and conversations."""

from keras_lm.chat.template import ChatTemplateError, render_chat_template  # noqa: F401
