"""SigLIP: like CLIP, with a sigmoid head (logit scale and bias) and max-length padded text."""

from __future__ import annotations

from mmdeploy.models.clip import ClipAdapter


class SiglipAdapter(ClipAdapter):
    family = "siglip"
    description = "SigLIP (SiglipModel): vision + text towers, sigmoid head"
    model_class = "SiglipModel"
    image_processor_class = "SiglipImageProcessor"
    model_types = ("siglip",)
    architectures = ("SiglipModel",)
    text_inputs = ("input_ids",)  # SigLIP is trained on max-length padded text without a mask
    pad_to_max_length = True

    def _towers(self):
        import torch

        model = self.torch_model()

        class VisionTower(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.vision_model = model.vision_model

            def forward(self, pixel_values):
                return self.vision_model(pixel_values=pixel_values).pooler_output

        class TextTower(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.text_model = model.text_model

            def forward(self, input_ids):
                return self.text_model(input_ids=input_ids).pooler_output

        return VisionTower().eval(), TextTower().eval()
