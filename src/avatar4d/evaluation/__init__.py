"""Evaluation on held-out frames: PSNR, SSIM, L1, LPIPS (AlexNet, v0.1), over the whole image and the face region."""
