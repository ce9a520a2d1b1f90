"""Built-in chat templates, for checkpoints that carry none (written in the formats these
families were trained on; a checkpoint's own template always wins)."""

# <start_of_turn>role ... <end_of_turn>; a system message opens the first user turn.
# Shared opening: the start token; a system message becomes `first_user_prefix`; then the
# loop over alternating user/assistant turns.
_SYSTEM_INTO_FIRST_TURN = (
    "{{ bos_token }}"
    "{%- if messages[0]['role'] == 'system' -%}"
    "{%- set first_user_prefix = messages[0]['content'] | trim + '\n\n' -%}"
    "{%- set loop_messages = messages[1:] -%}"
    "{%- else -%}"
    "{%- set first_user_prefix = '' -%}"
    "{%- set loop_messages = messages -%}"
    "{%- endif -%}"
    "{%- for message in loop_messages -%}"
    "{%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}"
    "{%- endif -%}"
)

GEMMA = (
    _SYSTEM_INTO_FIRST_TURN +
    "{%- set role = 'model' if message['role'] == 'assistant' else message['role'] -%}"
    "{{ '<start_of_turn>' + role + '\n' + (first_user_prefix if loop.first else '') }}"
    "{{ message['content'] | trim }}"
    "{{ '<end_of_turn>\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<start_of_turn>model\n' }}{%- endif -%}"
)

# Llama 3: a header per turn, each turn ended by <|eot_id|>.
LLAMA3 = (
    "{{- bos_token }}"
    "{%- for message in messages %}"
    "{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'"
    " + message['content'] | trim + '<|eot_id|>' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}"
    "{{- '<|start_header_id|>assistant<|end_header_id|>\n\n' }}"
    "{%- endif %}"
)

# Llama 2 / Mistral instruct: [INST] user [/INST] answer</s>; a system message opens the
# first user turn.
INST = (
    _SYSTEM_INTO_FIRST_TURN +
    "{%- if message['role'] == 'user' -%}"
    "{{ '[INST] ' + (first_user_prefix if loop.first else '') + message['content'] | trim"
    " + ' [/INST]' }}"
    "{%- else -%}"
    "{{ ' ' + message['content'] | trim + eos_token }}"
    "{%- endif -%}"
    "{%- endfor -%}"
)

# ChatML (Qwen): <|im_start|>role\n ... <|im_end|>\n
CHATML = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\n' }}{%- endif %}"
)
