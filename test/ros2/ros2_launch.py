"""``ros2 launch PACKAGE FILE name:=value ...`` without ros2cli (it has no wheel): the same
``ros2launch.api`` calls the verb makes -- find the file in the package's share folder, then
``launch_a_launch_file`` (a ``launch.LaunchService`` running an ``IncludeLaunchDescription``).
Used by test_launch.py in its own process, like the real command."""
import sys

from ros2launch.api import get_share_file_path_from_package, launch_a_launch_file


def main(argv: list[str]) -> int:
    package, file_name, *arguments = argv
    path = get_share_file_path_from_package(package_name=package, file_name=file_name)
    return launch_a_launch_file(launch_file_path=path, launch_file_arguments=arguments,
                                noninteractive=True)


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
