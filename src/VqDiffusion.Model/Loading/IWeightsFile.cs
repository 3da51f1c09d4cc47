namespace VqDiffusion.Model.Loading;

/// <summary>An opened weights file (safetensors or PyTorch pickle): the index of its tensors.</summary>
public interface IWeightsFile : IDisposable
{
    string Path { get; }

    IReadOnlyDictionary<string, TensorEntry> Tensors { get; }
}
