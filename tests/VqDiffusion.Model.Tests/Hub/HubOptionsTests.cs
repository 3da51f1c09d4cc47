using VqDiffusion.Model.Hub;

namespace VqDiffusion.Model.Tests.Hub;

public sealed class HubOptionsTests : IDisposable
{
    private readonly string _home = Path.Combine(Path.GetTempPath(), "vqd-hf-home-" + Guid.NewGuid().ToString("N"));

    public HubOptionsTests() => Directory.CreateDirectory(_home);

    public void Dispose() => Directory.Delete(_home, recursive: true);

    private static Func<string, string?> Env(params (string Name, string Value)[] variables) =>
        name => variables.FirstOrDefault(v => v.Name == name).Value;

    [Fact]
    public void TheDefaultsAreHuggingfaceHubs()
    {
        HubOptions o = HubOptions.FromEnvironment(Env(("XDG_CACHE_HOME", _home)));
        Assert.Equal(Path.Combine(_home, "huggingface", "hub"), o.CacheDir);
        Assert.Equal("https://huggingface.co", o.Endpoint);
        Assert.Null(o.Token);
        Assert.False(o.Offline);

        string home = Environment.GetFolderPath(Environment.SpecialFolder.UserProfile);
        Assert.Equal(Path.Combine(home, ".cache", "huggingface", "hub"), HubOptions.FromEnvironment(Env()).CacheDir);
    }

    [Fact]
    public void HfHomeGivesTheCacheAndTheTokenFileAndTheVariablesWin()
    {
        File.WriteAllText(Path.Combine(_home, "token"), "hf_from_file\n");
        HubOptions o = HubOptions.FromEnvironment(Env(("HF_HOME", _home), ("HF_ENDPOINT", "http://127.0.0.1:8080/"), ("HF_HUB_OFFLINE", "1")));
        Assert.Equal((Path.Combine(_home, "hub"), "http://127.0.0.1:8080", "hf_from_file", true), (o.CacheDir, o.Endpoint, o.Token, o.Offline));

        HubOptions env = HubOptions.FromEnvironment(Env(("HF_HOME", _home), ("HF_HUB_CACHE", "/somewhere/else"), ("HF_TOKEN", "hf_from_env")));
        Assert.Equal(("/somewhere/else", "hf_from_env"), (env.CacheDir, env.Token));

        Assert.Null(HubOptions.FromEnvironment(Env(("HF_HOME", _home), ("HF_HUB_DISABLE_IMPLICIT_TOKEN", "true"))).Token);
        Assert.Equal("/legacy", HubOptions.FromEnvironment(Env(("HUGGINGFACE_HUB_CACHE", "/legacy"))).CacheDir);
    }

    [Theory]
    [InlineData("1", true)]
    [InlineData("ON", true)]
    [InlineData("yes", true)]
    [InlineData("True", true)]
    [InlineData("0", false)]
    [InlineData("false", false)]
    [InlineData("", false)]
    public void OfflineIsHuggingfaceHubsIsTrue(string value, bool offline) =>
        Assert.Equal(offline, HubOptions.FromEnvironment(Env(("HF_HUB_OFFLINE", value))).Offline);
}
