namespace VqDiffusion.Model.Pipelines;

/// <summary>The negative ("unconditional") embeddings classifier-free guidance mixes with the prompt's.</summary>
public enum ClassifierFreeEmbeddings
{
    /// <summary>The model's: its learned embeddings when they are learnable, otherwise the encoded empty prompt.</summary>
    ModelDefault,

    /// <summary>The learned <c>learned_classifier_free_sampling_embeddings</c> (the model must have learnable ones).</summary>
    Learned,

    /// <summary>The normalised CLIP encoding of the empty prompt: zero-shot classifier-free guidance.</summary>
    EmptyPrompt,
}
