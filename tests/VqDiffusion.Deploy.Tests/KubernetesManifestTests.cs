using System.Globalization;
using System.Text.RegularExpressions;
using VqDiffusion.Deploy.Tests.TestSupport;
using YamlDotNet.RepresentationModel;
using static VqDiffusion.Deploy.Tests.TestSupport.Manifests;

namespace VqDiffusion.Deploy.Tests;

/// <summary>
/// deploy/kubernetes checked without a cluster: every file parses, and the invariants that make the deployment work
/// hold (probes, drain, selectors, autoscaling, disruption budget). No schema validator (kubeconform, kubeval) is
/// installable here, so the fields the checks read are asserted one by one.
/// </summary>
public sealed class KubernetesManifestTests
{
    private const string ServerPort = "50051";

    private static YamlMappingNode Deployment => OfKind("Deployment", "vqdiffusion");

    private static YamlNode Container => Assert.Single(List(Deployment, "spec", "template", "spec", "containers"));

    private static Dictionary<string, string> PodLabels => Map(Deployment, "spec", "template", "metadata", "labels");

    /// <summary>The service name the server registers with grpc.health.v1 besides "": the proto's package and service.</summary>
    private static string HealthServiceName()
    {
        string proto = File.ReadAllText(Path.Combine(Repo.Root, "protos", "vqdiffusion", "v1", "vqdiffusion.proto"));
        string package = Regex.Match(proto, @"^package ([\w.]+);", RegexOptions.Multiline).Groups[1].Value;
        string service = Regex.Match(proto, @"^service (\w+) \{", RegexOptions.Multiline).Groups[1].Value;
        string name = $"{package}.{service}";
        string serverApp = File.ReadAllText(Path.Combine(Repo.Root, "src", "VqDiffusion.Server", "ServerApp.cs"));
        Assert.Contains($"Map(\"{name}\"", serverApp, StringComparison.Ordinal);
        return name;
    }

    /// <summary>The container's environment: the ConfigMaps it takes with envFrom, then its own env (which wins).</summary>
    private static Dictionary<string, string> Environment()
    {
        var env = new Dictionary<string, string>();
        foreach (YamlNode source in List(Container, "envFrom"))
        {
            string? configMap = Str(source, "configMapRef", "name");
            Assert.NotNull(configMap);
            foreach (var kv in Map(OfKind("ConfigMap", configMap), "data"))
            {
                env[kv.Key] = kv.Value;
            }
        }

        foreach (YamlNode variable in List(Container, "env"))
        {
            env[Str(variable, "name")!] = Str(variable, "value") ?? "(from " + Str(variable, "valueFrom", "fieldRef", "fieldPath") + ")";
        }

        return env;
    }

    private static TimeSpan ParseDuration(string value) =>
        int.TryParse(value, NumberStyles.None, CultureInfo.InvariantCulture, out int seconds)
            ? TimeSpan.FromSeconds(seconds)
            : TimeSpan.Parse(value, CultureInfo.InvariantCulture);

    [Fact]
    public void EveryFileParsesAndIsListedInTheKustomization()
    {
        var documents = All();
        Assert.True(documents.Count >= 8, $"only {documents.Count} documents");
        foreach ((string file, YamlMappingNode root) in documents)
        {
            Assert.False(string.IsNullOrEmpty(Str(root, "apiVersion")), $"{file}: apiVersion");
            Assert.False(string.IsNullOrEmpty(Str(root, "kind")), $"{file}: kind");
            if (Str(root, "kind") != "Kustomization")
            {
                Assert.Matches("^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", Str(root, "metadata", "name") ?? "");
            }
        }

        YamlMappingNode kustomization = OfKind("Kustomization");
        string[] resources = List(kustomization, "resources").Select(n => ((YamlScalarNode)n).Value!).Order(StringComparer.Ordinal).ToArray();
        string[] files = Directory.GetFiles(Repo.KubernetesDir, "*.yaml").Select(f => Path.GetFileName(f)).Where(f => f != "kustomization.yaml").Order(StringComparer.Ordinal).ToArray();
        Assert.Equal(files, resources);
        Assert.Equal("vqdiffusion-grpc", Str(kustomization, "images", "0", "name"));
        Assert.Equal("vqdiffusion-grpc", Str(Container, "image"));
    }

    [Fact]
    public void ProbesAreNativeGrpcOnTheServerPort()
    {
        string service = HealthServiceName();
        Assert.Equal(ServerPort, Str(Container, "ports", "0", "containerPort"));
        Assert.Equal("grpc", Str(Container, "ports", "0", "name"));
        Assert.EndsWith(":" + ServerPort, Environment()["ASPNETCORE_URLS"], StringComparison.Ordinal);
        foreach (string probe in new[] { "startupProbe", "readinessProbe", "livenessProbe" })
        {
            YamlNode? node = At(Container, probe);
            Assert.True(node is not null, probe + " is missing");
            Assert.Equal(ServerPort, Str(node!, "grpc", "port")); // grpc probes take a number, not a port name
            Assert.Null(At(node!, "httpGet"));
            Assert.Null(At(node!, "exec"));
            Assert.Null(At(node!, "tcpSocket"));
        }

        // Ready and started: the service, NOT_SERVING until the model is loaded and warmed up. Alive: the overall status.
        Assert.Equal(service, Str(Container, "readinessProbe", "grpc", "service"));
        Assert.Equal(service, Str(Container, "startupProbe", "grpc", "service"));
        Assert.True(string.IsNullOrEmpty(Str(Container, "livenessProbe", "grpc", "service")));
        // The startup probe leaves minutes for loading the real model before liveness can restart the pod.
        int startupSeconds = Int(Container, "startupProbe", "periodSeconds") * Int(Container, "startupProbe", "failureThreshold");
        Assert.True(startupSeconds >= 300, $"startup probe allows only {startupSeconds} s");
    }

    [Fact]
    public void TheGracePeriodCoversThePreStopDelayAndTheDrain()
    {
        string[] preStop = List(Container, "lifecycle", "preStop", "exec", "command").Select(n => ((YamlScalarNode)n).Value!).ToArray();
        Assert.Equal("sleep", preStop[0]);
        int preStopSeconds = int.Parse(preStop[1], CultureInfo.InvariantCulture);
        Assert.True(preStopSeconds > 0);
        TimeSpan drain = ParseDuration(Environment()["VQD_Generation__DrainTimeout"]);
        Assert.True(drain > TimeSpan.Zero);
        int grace = Int(Deployment, "spec", "template", "spec", "terminationGracePeriodSeconds");
        // Kubernetes counts preStop inside the grace period; SIGKILL must come after the drain has ended.
        Assert.True(grace >= preStopSeconds + drain.TotalSeconds + 10, $"grace {grace} s < preStop {preStopSeconds} s + drain {drain.TotalSeconds} s + 10 s");
    }

    [Fact]
    public void TheModelVolumeAndGpuAreRequested()
    {
        Assert.Equal("1", Str(Container, "resources", "limits", "nvidia.com/gpu"));
        Assert.Equal("cuda", Environment()["VQD_Model__Device"]);
        string mountName = Str(Container, "volumeMounts", "0", "name")!;
        string mountPath = Str(Container, "volumeMounts", "0", "mountPath")!;
        YamlNode volume = Assert.Single(List(Deployment, "spec", "template", "spec", "volumes"), v => Str(v, "name") == mountName);
        string claim = Str(volume, "persistentVolumeClaim", "claimName")!;
        Assert.Equal("PersistentVolumeClaim", Str(OfKind("PersistentVolumeClaim", claim), "kind"));
        Assert.StartsWith(mountPath + "/", Environment()["VQD_Model__Path"], StringComparison.Ordinal);
        Assert.Equal("(from metadata.name)", Environment()["VQD_Server__InstanceId"]);
    }

    [Fact]
    public void SelectorsMatchThePodLabels()
    {
        Assert.True(Selects(Map(Deployment, "spec", "selector", "matchLabels"), PodLabels), "Deployment selector");
        foreach (string name in new[] { "vqdiffusion", "vqdiffusion-headless" })
        {
            YamlMappingNode service = OfKind("Service", name);
            Assert.True(Selects(Map(service, "spec", "selector"), PodLabels), name + " selector");
            Assert.Equal("grpc", Str(service, "spec", "ports", "0", "targetPort"));
            Assert.Equal(ServerPort, Str(service, "spec", "ports", "0", "port"));
            Assert.Equal("kubernetes.io/h2c", Str(service, "spec", "ports", "0", "appProtocol"));
        }

        Assert.Equal("None", Str(OfKind("Service", "vqdiffusion-headless"), "spec", "clusterIP"));
        Assert.Equal("ClusterIP", Str(OfKind("Service", "vqdiffusion"), "spec", "type"));
        YamlMappingNode pdb = OfKind("PodDisruptionBudget");
        Assert.Equal("policy/v1", Str(pdb, "apiVersion"));
        Assert.True(Selects(Map(pdb, "spec", "selector", "matchLabels"), PodLabels), "PodDisruptionBudget selector");
        Assert.Equal("1", Str(pdb, "spec", "maxUnavailable"));
    }

    [Fact]
    public void TheAutoscalerScalesTheDeploymentOnQueueLength()
    {
        YamlMappingNode hpa = OfKind("HorizontalPodAutoscaler");
        Assert.Equal("autoscaling/v2", Str(hpa, "apiVersion"));
        Assert.Equal(("apps/v1", "Deployment", "vqdiffusion"), (Str(hpa, "spec", "scaleTargetRef", "apiVersion"), Str(hpa, "spec", "scaleTargetRef", "kind"), Str(hpa, "spec", "scaleTargetRef", "name")));
        YamlNode metric = Assert.Single(List(hpa, "spec", "metrics"));
        Assert.Equal("Pods", Str(metric, "type"));
        Assert.Equal("vqd_queue_length", Str(metric, "pods", "metric", "name"));
        Assert.Equal("AverageValue", Str(metric, "pods", "target", "type"));
        int min = Int(hpa, "spec", "minReplicas");
        int max = Int(hpa, "spec", "maxReplicas");
        Assert.InRange(min, 1, max);
        // The budget still lets one pod go when the autoscaler is at its minimum.
        Assert.True(min >= 2, "with one replica a node drain would take the service down");
        // The Prometheus adapter rule in the README exposes the metric under the same name.
        string readme = File.ReadAllText(Path.Combine(Repo.KubernetesDir, "README.md"));
        Assert.Contains("seriesQuery: 'vqd_queue_length", readme, StringComparison.Ordinal);
        Assert.Contains("as: \"vqd_queue_length\"", readme, StringComparison.Ordinal);
        Assert.Equal(Str(Deployment, "spec", "template", "metadata", "annotations", "prometheus.io/port"), Environment()["VQD_Metrics__Port"]);
    }
}
