"""EncryIP exporter: train a protected model once (Algorithm 1) and export a release."""
