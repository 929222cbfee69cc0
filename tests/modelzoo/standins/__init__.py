"""Local stand-ins for Civitai, Hugging Face and ModelScope (real HTTP servers on
127.0.0.1), and synthetic model files with real safetensors headers. Used by the
ModelZoo tests and by the web UI's."""
