"""Security tests: attacks replayed against the real code, with outcomes asserted.

Run: `DATA_DIR=data/test-sec .venv/bin/pytest tests/security`. The figures (payloads tried,
executions, leaks) are printed at the end under "security figures" (tests/security/tally.py).
A defect found in code these tests do not own is first kept as an xfail(strict=True) test
whose reason names the fix; the mark comes off when the fix lands.

Which test covers which attack (OWASP Top 10 for LLM applications 2025, and the web):

LLM01 prompt injection, direct and indirect
    test_prompt_injection.py: 28 payloads (injection_corpus.txt), each as the user's message and
    through a tool result (a fetched page, another thread, a search hit, a workspace file), with
    a model that obeys completely; no disabled tool runs. Its last two tests show the detectors
    catch a tool that is on, and a secret that reaches the model.
LLM02 sensitive information disclosure
    test_prompt_injection.py: SECRET_KEY, the LLM API key and a live login token never appear in
    what the model is sent, stored rows, the chat page, the admin monitor, the attacker's server
    or the logs (at DEBUG). Also: tests/agents/tools/test_shell.py
    ::test_the_environment_holds_no_server_secrets; tests/chat/test_security_login.py
    ::test_a_refusal_is_logged_as_a_warning_without_the_token.
LLM03 supply chain
    test_malformed_input.py: agent files for import that nest too deeply or expand YAML aliases
    (a 400-byte file once took ~110 s and 1.5 GB). tests/test_packaging.py pins versions.
LLM05 improper output handling (stored XSS, streamed XSS)
    test_xss_browser.py: 64 payloads (xss_corpus.txt) in every place user, model and admin text is
    shown, live over the websocket too, in Chromium: nothing runs, nothing foreign is fetched,
    no image, on* attribute or javascript: URL in the DOM. tests/chat/test_rendering.py pins the
    exact sanitised HTML per payload; tests/chat/test_admin.py
    ::test_the_monitor_escapes_everything_stored; tests/chat/test_views.py
    ::test_pages_have_no_inline_script_or_style.
LLM06 excessive agency (a disabled tool called anyway, escaping the workspace, other users' data)
    test_prompt_injection.py (shell, write_file, edit_file asked for after every payload);
    tests/agents/test_capabilities.py::test_only_enabled_tools_are_offered_and_a_disabled_one_asked_for_is_not_run;
    tests/agents/test_loop.py::test_an_unknown_tool_is_answered_with_an_error_and_nothing_runs;
    tests/agents/tools/test_shell.py::test_it_is_off_by_default_and_outlives_its_own_time_limit;
    tests/agents/tools/test_workspace_files.py (paths and symlinks leaving the workspace);
    tests/agents/tools/test_history_tools.py (another owner's threads read as non-existent).
Server-side request forgery (fetch_url)
    tests/agents/tools/test_fetch_url.py: loopback spellings incl. [::ffff:127.0.0.1], octal and
    decimal forms, private and metadata addresses, redirects into the private network, the
    checked address is the one connected to (DNS rebinding), proxies from the environment,
    credentials in URLs. test_prompt_injection.py: file:// URLs asked for by an injection.
LLM10 unbounded consumption
    test_malformed_input.py (10 MB bodies, a YAML alias bomb); tests/agents/test_loop.py
    (round cap, a repeated call); tests/agents/tools/test_workspace_files.py
    ::test_grep_stops_a_pattern_that_would_backtrack_for_ever_and_says_why;
    tests/agents/tools/test_fetch_url.py (body cap, slow and trickling servers).
Malformed input (crashing the server)
    test_malformed_input.py: huge, non-UTF-8, invalid JSON, wrong-typed and broken multipart
    bodies on every POST endpoint and wrong-typed websocket frames, against the real daphne;
    tests/chat/test_consumers.py::test_bad_frames_each_get_an_error_and_the_socket_keeps_working
    (not JSON, not an object, unknown type, binary, oversized).
Browser-side defences
    test_headers.py: CSP, nosniff, Referrer-Policy, framing denied and Permissions-Policy on
    pages, login pages, admin, static files, 400/403/404/405/409/429/500; cookie flags.
    tests/chat/test_views.py::test_pages_carry_the_strict_csp_and_nosniff.
Logging in
    tests/chat/test_security_login.py: guessed links rate-limited (X-Forwarded-For not trusted),
    a stale session after rotation, the deploy check; tests/chat/test_views.py
    ::test_the_admin_login_does_not_redirect_off_site; tests/chat/test_consumers.py: sockets from
    another origin refused, rotation closes open sockets.
"""
