using VqDiffusion.Model.Hub;

namespace VqDiffusion.Model.Tests.Hub;

public sealed class HubModelIdTests
{
    [Theory]
    [InlineData("microsoft/vq-diffusion-ithq", "microsoft/vq-diffusion-ithq", null, "models--microsoft--vq-diffusion-ithq")]
    [InlineData("org/name@v1.0", "org/name", "v1.0", "models--org--name")]
    [InlineData("org/name@refs/pr/1", "org/name", "refs/pr/1", "models--org--name")]
    [InlineData("Org_1/my.model@0123456789abcdef0123456789abcdef01234567", "Org_1/my.model", "0123456789abcdef0123456789abcdef01234567", "models--Org_1--my.model")]
    public void ValidIdsParse(string value, string repo, string? revision, string folder)
    {
        Assert.True(HubModelId.TryParse(value, out HubModelId id));
        Assert.Equal((repo, revision, folder), (id.RepoId, id.Revision, id.CacheFolderName));
        Assert.Equal(value, id.ToString());
    }

    [Theory]
    [InlineData("")]
    [InlineData("name-only")]
    [InlineData("/abs/path")]
    [InlineData("./models/x")]
    [InlineData("a/b/c")]
    [InlineData("org/na--me")]
    [InlineData("org/na..me")]
    [InlineData("org/name@")]
    [InlineData("org/name@a b")]
    [InlineData("org/-name")]
    public void OtherStringsAreNotIds(string value) => Assert.False(HubModelId.TryParse(value, out _));

    [Fact]
    public void CommitHashesAreFortyLowercaseHexDigits()
    {
        Assert.True(HubModelId.IsCommitHash("0123456789abcdef0123456789abcdef01234567"));
        Assert.False(HubModelId.IsCommitHash("0123456789ABCDEF0123456789abcdef01234567"));
        Assert.False(HubModelId.IsCommitHash("main"));
    }
}
