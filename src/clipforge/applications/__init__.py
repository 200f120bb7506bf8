"""What CLIP powers: scores and reranking, guidance, image generation and localization."""
