"""Operations: TLS material, backups, DNS records, doctor, metrics."""
