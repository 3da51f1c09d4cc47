namespace VqDiffusion.Model.Loading;

/// <summary>PyTorch <c>torch.save</c> checkpoint (zip + pickle). Being implemented.</summary>
public sealed class PyTorchCheckpointFile : IWeightsFile
{
    private PyTorchCheckpointFile(string path) => Path = path;

    public string Path { get; }

    public IReadOnlyDictionary<string, TensorEntry> Tensors { get; } = new Dictionary<string, TensorEntry>();

    public static PyTorchCheckpointFile Open(string path) =>
        throw new ModelLoadException($"{path}: PyTorch .bin checkpoints are not readable yet.");

    public void Dispose()
    {
    }
}
