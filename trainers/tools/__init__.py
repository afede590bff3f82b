"""One-shot tools, each its own process or command: data preview, playground generation,
export, the doctor's environment report and the offline demo model."""
