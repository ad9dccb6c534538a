# The gateway keeps no tables of its own: runs live in agents, messages in chat.
