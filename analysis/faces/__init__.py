"""One picture's faces: detect, align (landmarks, FFHQ crops), crop and embed."""
